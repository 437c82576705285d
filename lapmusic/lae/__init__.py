"""The linear autoencoder for sequences (LAE): ``y_t = A x_t + B y_{t-1}``, fitted in closed form from the SVD
of the data matrix Xi.

Modules: :mod:`.fit` (``fit_lae``, the exact solver), :mod:`.approx` (the randomized Krylov solver),
:mod:`.xi_operator` (its FFT products with Xi), :mod:`.xi` (Xi and its helpers), :mod:`.autoencoder`
(``LinearAutoencoder``: encode, decode, save, load).

This package imports none of its modules, so that importing one of them (a worker process, the CLI's early
checks) costs only what that module needs: import each name from its module.
"""
