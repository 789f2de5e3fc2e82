"""Your project, apart from the library: `seedbed new`, `seedbed update`, `seedbed cp`.

`seedbed new NAME` renders the project template shipped with this version of
seedbed (copier) into ./NAME; `seedbed update` merges what the template has
changed since into a project, keeping your edits; `seedbed cp PART` copies a
library module into your package, to own and edit.
"""
