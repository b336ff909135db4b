from steelseg_hpc.cli import main

main()
