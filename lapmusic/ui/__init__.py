"""The Streamlit app (``streamlit run app.py``): the only package of lapmusic that imports Streamlit.

``sidebar`` draws the settings and the Train button, ``pages`` one module per tab, ``common`` the job
manager, the browser session, the dataset cache and the error guard every page body runs in.
"""
