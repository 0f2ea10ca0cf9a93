// CFaissShim placeholder
