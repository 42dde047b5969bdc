import sys

from .cli import main

status = main()
if "accelerate" in sys.modules:  # one of N processes started by a launcher: leave the process group before exit
    from .distributed import leave_process_group

    leave_process_group(succeeded=status == 0)
raise SystemExit(status)
