"The main job: the `resnetx` command, training, the built-in data set and the plots."
