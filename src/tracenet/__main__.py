from tracenet.cli import main

raise SystemExit(main())
