"""The paper's experiments as pure functions returning JSON-ready results (plotting apart)."""
