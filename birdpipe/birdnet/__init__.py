"""BirdNET V2.4 in one place: ``runtime`` (the offline model: windows, embeddings, logits, labels), ``inputs``
(what a cache frame holds per window and the per-recording extraction), ``zero_shot`` (BirdNET's own classifier
as a model, and the gate). The heads trained on its inputs are in :mod:`birdpipe.models.birdnet_head`; the late
fusion with a trained model in :mod:`birdpipe.evaluation.fusion`."""
