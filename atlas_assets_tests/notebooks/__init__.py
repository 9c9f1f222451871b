"""Notebooks written for Nomic Atlas (``from nomic import ...``), run by ``test_notebooks.py``
with only the import swapped. They are scripts, not tests: pytest does not collect them."""
