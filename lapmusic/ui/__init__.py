"""The Streamlit app (``streamlit run app.py``): the only package of lapmusic that imports Streamlit.

``server`` sets the server process up and holds what every session shares (the job manager, the dataset
cache); ``session`` is one browser session (its signed id, focus, tab); ``guard`` the error guard every page
body runs in; ``fairness`` paces the live pages' refreshes; ``datasets`` loads data without blocking a page;
``labels`` and ``defaults`` hold the pages' wording and the sidebar's defaults; ``sidebar`` draws the
settings and the Train button, ``pages`` one module per tab; ``player`` the piano-roll player;
``slowclients`` hangs up on browsers that fall far behind.
"""
