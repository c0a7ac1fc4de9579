"""mixlab dashboard: `streamlit run app.py`. Opens the demo lab (or the view a URL names:
?lab=PATH&w=…&bench=…&method=…) and lays out the pages with st.navigation; each page is a thin script in
views/ over the mixlab library. (The scripts live in views/, not pages/: a pages/ folder would also switch
on Streamlit's older automatic page discovery, which flashes a second menu before st.navigation takes over.)"""

from pathlib import Path

import streamlit as st

from views.jobs import page_run
from views.state import lab_path, read_url, write_url
from views.text import code
from views.widgets import figure_format_picker

# a local icon: nothing is fetched from another host (a :material: icon would load a web font)
st.set_page_config(page_title="mixlab", page_icon=str(Path(__file__).with_name("views") / "icon.png"), layout="wide")
read_url()  # once per session: the URL's view becomes the session's state
nav = st.navigation(
    [
        st.Page("views/1_lab.py", title="Lab", icon=":material/science:", default=True),
        st.Page("views/2_simplex.py", title="Simplex explorer", icon=":material/change_history:", url_path="simplex"),
        st.Page("views/3_merge.py", title="Merge & evaluate", icon=":material/merge:", url_path="merge"),
        st.Page(
            "views/4_proxy_vs_true.py", title="Proxy vs true", icon=":material/scatter_plot:", url_path="proxy-vs-true"
        ),
        st.Page("views/5_pareto.py", title="Pareto fronts", icon=":material/stacked_line_chart:", url_path="pareto"),
        st.Page("views/6_experts.py", title="Experts", icon=":material/hub:", url_path="experts"),
        st.Page("views/7_search.py", title="Search", icon=":material/travel_explore:", url_path="search"),
    ]
)
st.sidebar.caption(f"Lab: {code(lab_path())}")
figure_format_picker()
# the background warm-up (model stack, merge kernels) starts after the first page run, runs between page runs
with page_run(nav.url_path):
    try:
        nav.run()
    finally:
        write_url()  # the address bar names this view, also after a page switch (which drops query parameters)
