"""Writing one benchmark's section of benchmarks/RESULTS.md, leaving the other sections."""
import os


def replace_section(path, begin, end, section):
    """Replace the text from marker ``begin`` to marker ``end`` of ``path`` with
    ``section`` (which holds both markers), or append it when the markers are absent.

    Returns:
        the file's previous text ("" when it did not exist).
    """
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
    if begin in old and end in old:
        new = old[:old.index(begin)] + section.rstrip("\n") + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + section
    with open(path, "w", encoding="utf-8") as f:
        f.write(new if new.endswith("\n") else new + "\n")
    return old
