from groupgen.cli import main

raise SystemExit(main())
