// CFaissKernels placeholder
