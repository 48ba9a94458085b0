"""Thin rclpy nodes over the aichemist core packages (one module per node, each with main())."""
