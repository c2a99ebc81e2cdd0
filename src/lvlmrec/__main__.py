from lvlmrec.cli import main

main()
