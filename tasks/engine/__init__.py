"""The engine layer: the only code that talks to Docker, through the docker SDK and the docker CLI
(buildx for builds, compose for the bundle). It meets the protocols of core/ports.py and hands
back their plain records; SDK objects and engine errors never leave it untranslated."""
