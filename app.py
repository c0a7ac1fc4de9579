"""mixlab dashboard (placeholder until the dashboard lands): lists the demo lab's experts."""

import streamlit as st

from mixlab.cli import DEMO_LAB
from mixlab.errors import MixlabError
from mixlab.lab import load_lab

st.title("mixlab")
try:
    lab = load_lab(DEMO_LAB)
    st.write(f"Lab **{lab.name}**: experts " + ", ".join(lab.expert_names))
except MixlabError as e:
    st.error(str(e))
