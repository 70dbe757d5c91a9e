"""Is an HDF5 file self-contained? The one check the NIR importer and the SHD/SSC readers share.

HDF5 lets a file pull bytes from elsewhere without the reader asking for it:

- an **external link** opens another HDF5 file when it is traversed;
- a dataset with **external raw storage** (``create_dataset(..., external=[(path, offset, size)])``)
  reads its elements from any file (``/etc/passwd``, another user's data) as if they were its own;
- a **virtual dataset** maps its elements onto datasets of other HDF5 files.

And a file may be shaped so that a reader walking it never stops: a **soft link to a group** makes
the group reachable again below itself (``/a/loop -> /a``), and a soft link that never resolves
(dangling, or a chain of soft links that loops) raises deep inside the reader; a **hard link to a
group** already linked elsewhere makes the "tree" a graph (a cycle when it points back up); and a
deep enough nesting of groups exhausts a recursive reader's stack. Neither NIR files (``nir.write``)
nor the published SHD/SSC files contain any of these, so each is refused, naming the node.

The walk follows hard links only and never resolves an external link. Every group reachable from
the root is reached by a hard-link path (a soft link names a path made of links in such groups), so
once no group holds an external link, resolving a soft link cannot leave the file: soft links are
resolved only after that (HDF5 itself stops a looping chain of soft links after a few steps).
"""

from __future__ import annotations

from typing import Any

# Groups nested deeper than this are refused: nir's reader recurses a few Python frames per level.
MAX_DEPTH = 64


def _dataset_problem(name: str, dataset: Any) -> str | None:
    if dataset.is_virtual:
        return (f"node {name!r} is a virtual dataset: its elements come from other HDF5 files "
                f"({', '.join(sorted({s.file_name for s in dataset.virtual_sources()}))})")
    if dataset.external:
        files = ", ".join(sorted({str(entry[0]) for entry in dataset.external}))
        return f"node {name!r} stores its elements in another file ({files}: HDF5 external raw storage)"
    return None


def structure_problem(file: Any) -> str | None:
    """What makes the open ``h5py.File`` ``file`` read outside itself or loop, naming the node, or None.

    Checked from the file's structure alone: no dataset's elements are read."""
    import h5py

    root = file["/"]
    groups_seen: dict[Any, str] = {root.id: "/"}  # group object -> the first path it was reached by
    soft_links: list[tuple[str, str]] = []  # (link path, target path)
    stack: list[tuple[str, Any, int]] = [("/", root, 0)]
    while stack:
        path, group, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"node {path!r} is nested {depth} groups deep, more than {MAX_DEPTH}"
        for key in group:
            name = path.rstrip("/") + "/" + key
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                return f"node {name!r} is an external link to another file ({link.filename}:{link.path})"
            if isinstance(link, h5py.SoftLink):
                soft_links.append((name, link.path))
                continue
            if not isinstance(link, h5py.HardLink):  # a user-defined link class: nothing we can vouch for
                return f"node {name!r} is a link of an unknown class ({type(link).__name__})"
            child = group[key]
            if isinstance(child, h5py.Dataset):
                problem = _dataset_problem(name, child)
                if problem:
                    return problem
            elif isinstance(child, h5py.Group):
                first = groups_seen.get(child.id)
                if first is not None:
                    return (f"node {name!r} is a second hard link to the group {first!r}: the file "
                            "is not a tree (a cycle when it points back up)")
                groups_seen[child.id] = name
                stack.append((name, child, depth + 1))
            else:
                return f"node {name!r} is a {type(child).__name__}, not a group or a dataset"
    for name, target in soft_links:
        try:
            resolved = file[name]
        except (KeyError, RuntimeError, OSError, ValueError):
            return f"node {name!r} is a soft link to {target!r}, which does not resolve (dangling or cyclic)"
        if isinstance(resolved, h5py.Group):
            return (f"node {name!r} is a soft link to the group {target!r}: a reader walking the file would "
                    "enter that group again (endlessly when it contains the link)")
    return None
