"""Where items come from: document folders, archives and JSONL; image folders and IDX files; web crawls.

Every reader returns :class:`~retrieval.items.Item` records (and, for
images, their pixels); a bad file is skipped with a warning naming it.
"""
