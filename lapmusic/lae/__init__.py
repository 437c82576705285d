"""The linear autoencoder for sequences (LAE): ``y_t = A x_t + B y_{t-1}``, fitted in closed form from the SVD
of the data matrix Xi.

Modules: :mod:`.fit` (``fit_lae``, the exact solver), :mod:`.approx` (the randomized Krylov solver),
:mod:`.xi_operator` (its FFT products with Xi), :mod:`.xi` (Xi and its helpers), :mod:`.autoencoder`
(``LinearAutoencoder``: encode, decode, save, load).
"""

from lapmusic.lae.autoencoder import LinearAutoencoder
from lapmusic.lae.fit import fit_lae

__all__ = ["LinearAutoencoder", "fit_lae"]
