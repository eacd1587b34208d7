"""Products, guesses, the work queue, annotations, codebook, gold items, consensus and agreement."""
