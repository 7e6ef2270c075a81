from gradrank.cli.app import main

main()
