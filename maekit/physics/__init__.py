"""Particle-physics side of maekit: simulated quark/gluon jet images (generate.py, with the optional extra
`maekit[physics]`: pythia8mc + fastjet), the detector-lite imaging (detector.py, numpy only) and
physics-aware reconstruction metrics (metrics.py, torch only). See docs/physics.md."""
