"""The course tooling: what runs, checks and presents the course, beside the ML core (ARCHITECTURE.md).

``notebook`` (``setup_notebook``, the first call of every notebook), ``execution`` (one notebook
under papermill), ``runner`` (``make course``), ``slides`` (``make slides``), ``pages`` (HTML
pages of executed notebooks), ``course_map`` (the table of notebooks) and ``colab`` (the Colab
set-up). It uses the ML core; the ML core never uses it (``tests/test_architecture.py``).
"""
