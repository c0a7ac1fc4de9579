"""Meeting researchers' own files: mergekit configs out and in (:mod:`.mergekit`), a ``lab.toml`` written from a
folder of checkpoints and JSONL (:mod:`.lab_init`), true mixtures read from training runs (:mod:`.trained`), and the
lab's model folders as a manifest names them (:mod:`.models`)."""
