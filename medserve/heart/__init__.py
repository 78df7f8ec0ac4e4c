"""Heart-attack risk model: coronary artery disease from 13 clinical attributes."""
