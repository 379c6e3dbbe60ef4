"""``python -m jaxbragg`` runs the command line."""
from ._entry import jaxbragg

if __name__ == "__main__":
    jaxbragg()
