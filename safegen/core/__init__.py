"""The lowest layer: one home for each concern every other layer shares.

errors (the exception types and their one-line messages), io (atomic writes, the umask,
line splitting, JSONL), seeds, devices (device, dtype and a library's dtype keyword),
terminal (quieting libraries, progress), hub (offline-aware loading), fingerprint (content
hashes of weights), locking (one writer per folder) and output_folder (what a command may
write where). Modules here import nothing from the rest of safegen.
"""
