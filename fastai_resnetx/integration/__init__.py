"Glue to the ecosystems: fastai model_meta and Learner patches, timm registry, distributed training."
