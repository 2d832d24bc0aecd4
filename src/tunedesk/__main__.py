from tunedesk.cli import main

raise SystemExit(main())
