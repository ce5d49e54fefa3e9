from monai_stlu.cli import main

if __name__ == "__main__":
    main()
