"""Reading what users hand in: prompt and caption files, named prompt sets, image files and
Safe-CLIP quadruples. Imports only from :mod:`safegen.core`.
"""
