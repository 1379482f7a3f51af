"The model family: the fold rule, layers and blocks, the ResNetX config and module, pretrained weights."
