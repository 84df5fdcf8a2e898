from regionha.cli import main

raise SystemExit(main())
