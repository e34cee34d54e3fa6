"""What a selection did: the report, its figures, and the dataset card for the Hub."""
