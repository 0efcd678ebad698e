from lpuc.cli import main

raise SystemExit(main())
