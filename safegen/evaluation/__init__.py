"""Measuring safety and quality: methods side by side, classifiers, statistics, reports.

Adversarial evaluation (``safegen eval attack``) lives in :mod:`safegen.evaluation.attacks`.
"""
