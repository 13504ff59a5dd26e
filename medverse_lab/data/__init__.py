"""Data: MedVerse records (JSONL), multiple-choice questions, the dataset checker and the
Curator that writes records from the shipped knowledge graph.

``ml.records``, ``ml.load_questions``, ``ml.check_dataset`` and ``ml.curate`` are the
public faces of :mod:`.records`, :mod:`.questions`, :mod:`.check` and :mod:`.curate`.
"""
