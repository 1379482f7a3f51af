"Tools to look inside any model: build an arch, arch summaries, exact FLOPs, derived layer groups."
