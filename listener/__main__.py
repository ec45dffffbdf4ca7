from listener.ops.cli import main

raise SystemExit(main())
