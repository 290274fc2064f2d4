"""Advisors that propose rewrites (one module each): deterministic, llm."""
