"""mixlab dashboard: `streamlit run app.py`. Opens the demo lab (or the lab in ?lab=PATH) and lays
out the pages; each page is a thin script in pages/ over the mixlab library."""

import streamlit as st

from pages._shared import lab_path

st.set_page_config(page_title="mixlab", page_icon="🧪", layout="wide")
lab_path()  # read ?lab= once per session
nav = st.navigation([
    st.Page("pages/1_lab.py", title="Lab", icon="🧪", default=True),
    st.Page("pages/2_simplex.py", title="Simplex explorer", icon="🔺"),
    st.Page("pages/3_merge.py", title="Merge & evaluate", icon="⚗️"),
    st.Page("pages/4_proxy_vs_true.py", title="Proxy vs true", icon="📈"),
    st.Page("pages/5_pareto.py", title="Pareto fronts", icon="🏔️"),
    st.Page("pages/6_experts.py", title="Experts", icon="🧬"),
])
st.sidebar.caption(f"Lab: `{lab_path()}`")
nav.run()
