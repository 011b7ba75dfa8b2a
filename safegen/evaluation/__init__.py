"""Measuring safety and quality: methods side by side, classifiers, statistics, reports."""
