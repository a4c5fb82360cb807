"""``python -m influence``: the command line, the module torchrun runs on every rank
(``torchrun --nproc-per-node N -m influence --export OUT ...``)."""

from job.cli import main

if __name__ == "__main__":
    main()
