from archforge.cli import main

raise SystemExit(main())
