"""Running kinrec's offline work on a Ray cluster (``pip install 'kinrec[ray]'``).

:mod:`~kinrec.distributed.cluster` connects (``--ray ADDRESS``); the jobs that use it are
encoding item texts, training (data-parallel workers for the gradient-trained models) and
batch recommendations for every user. Without ``--ray`` everything runs in one process.
"""
