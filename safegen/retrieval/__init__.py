"""Text-to-image and image-to-text retrieval with Safe-CLIP encoders: the retriever and its
index (:mod:`safegen.retrieval.retriever`) and where its items come from
(:mod:`safegen.retrieval.sources`).
"""
