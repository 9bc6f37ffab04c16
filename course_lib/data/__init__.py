"""Data of the course: reading, checking and loading the ABAW (s-Aff-Wild2) annotations and frames.

Taught in ``01_data``. Import the submodules directly, e.g. ``from course_lib.data import abaw``
(annotation files, label statistics), ``datasets`` (PyTorch datasets over the frames), ``synth``
(SynthAffWild and the course's data folder) or ``plan`` (SynthAffWild's story per video); this
package imports nothing on its own.
"""
