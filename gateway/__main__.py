"""``python -m gateway`` is ``tongban``."""

from gateway.cli import main

raise SystemExit(main())
