from ust.cli import main

raise SystemExit(main())
