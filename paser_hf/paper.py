"""The PASER paper, cited once: by the dataset card, the report and the trainer's model card."""

PASER_ARXIV = "2502.12594"
PASER_TITLE = "PASER: Post-Training Data Selection for Efficient Pruned Large Language Model Recovery"
PASER_BIBTEX = f"""@misc{{paser2025,
  title         = {{{{PASER}}: Post-Training Data Selection for Efficient Pruned Large Language Model Recovery}},
  year          = {{2025}},
  eprint        = {{{PASER_ARXIV}}},
  archivePrefix = {{arXiv}},
  url           = {{https://arxiv.org/abs/{PASER_ARXIV}}},
  note          = {{See arXiv:{PASER_ARXIV} for the author list}}
}}"""
#: The form `transformers.Trainer.create_model_card` reads from a trainer's `_paper` attribute (as trl's trainers).
PASER_PAPER = {"title": PASER_TITLE, "id": PASER_ARXIV, "citation": PASER_BIBTEX}
