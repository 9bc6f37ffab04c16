"""Data of the course: reading, checking and loading the ABAW (s-Aff-Wild2) annotations and frames.

Taught in ``01_data``. Import the submodules directly, e.g. ``from course_lib.data import abaw``
(annotation files, datasets, label statistics); this package imports nothing on its own.
"""
