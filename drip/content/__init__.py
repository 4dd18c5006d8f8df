"""Course content: sequences of Markdown lessons, checked, loaded and rendered.

- :mod:`~drip.content.types`: what the rest of drip uses at run time (``Lesson``, ``Sequence``).
- :mod:`~drip.content.checks`: every problem in a content folder, for authors and the CLI.
- :mod:`~drip.content.loading`: a content folder with no problems, for the running system.
- :mod:`~drip.content.render` and :mod:`~drip.content.preview`: lessons turned into emails.
"""
