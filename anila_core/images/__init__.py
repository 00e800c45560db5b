"""Images: datasets on disk, ConvNet energies, FID/KID features and scores, and the digits classifier."""
