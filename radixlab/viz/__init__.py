"""Pictures for the course: radix trees (`viz.trees`), step-through widgets (`viz.stepper`).

Import the submodule you need (`from radixlab.viz.trees import show_tree`); nothing is re-exported
here, so importing one picture module never pulls in the others.
"""
